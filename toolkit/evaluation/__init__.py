"""Evaluation: likelihood (NELBO / exact NLL with standard errors), sample quality and speed,
multiple-choice scoring. `python -m toolkit.evaluate` is the command-line front end."""
from toolkit.evaluation.likelihood import Estimate, dataset_nelbo, sequence_nll, text_nll  # noqa: F401
from toolkit.evaluation.generation import (gen_ppl, load_evaluator, mean_entropy, throughput,  # noqa: F401
                                           unigram_entropy)
