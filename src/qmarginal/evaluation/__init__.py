"""Evaluation of reconstruction methods as in Section V of the paper, and the published numbers.

``evaluate`` runs methods on random targets per case NxKy and rank and returns rows in the schema
of the published ``published_fidelity.csv`` plus extra columns; ``published`` loads the published
CSVs; ``figures`` draws Figures 2-4 and a runtime figure (matplotlib, extra ``qmarginal[plot]``).
"""

from .evaluate import COLUMNS, EXTRA_COLUMNS, evaluate, parse_case, summarize
from .methods import METHODS, csv_name

__all__ = ["evaluate", "summarize", "parse_case", "COLUMNS", "EXTRA_COLUMNS", "METHODS",
           "csv_name"]
