"""Coverage-guided fuzzing of every decoder that takes bytes from a peer or a client.

``targets/`` holds one harness per decoder, ``corpus/<target>/`` the inputs that once broke a
decoder (each a regression case), ``runner.py`` runs targets under atheris
(``python -m tests.fuzz run <target|all> --seconds N``) and ``test_fuzz.py`` replays the corpus
and runs every target briefly. docs/fuzzing.md says what is covered and how to run longer.
"""
