"""The defenses of the study, one module per family, each naming its paper and objective:
catmouse (the paper's cat-and-mouse FGSM rounds), fgsm_training (FGSM-AT and Sens-FGSM), game
(the AttNet game: alt, minimax, maximin), field (PGD-AT, TRADES, fast AT) and magnet (MagNet).
Which stage trains each and how it is loaded is in advgame.defense_table."""
