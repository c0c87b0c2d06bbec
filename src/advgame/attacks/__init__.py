"""L-inf attacks, one module per attack (the paper named in each docstring); the table that lists them is advgame.attack_table."""
