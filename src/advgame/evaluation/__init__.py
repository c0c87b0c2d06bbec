"""The cross-evaluation of a defender against every attack, its sanity checks, paired statistics and the Sens-FGSM ablations."""
