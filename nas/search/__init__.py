"""The search engine: strategies (ask/tell controllers), the search's bookkeeping, Ray Tune execution."""

from .base import Candidate, Controller
from .config import SearchConfig, load_search_config
from .evolution import RegularizedEvolution
from .nsga2 import NSGA2Search
from .objective import Objective, pareto_front
from .random_search import RandomSearch
from .search import Outcome, Search, evaluate_in_process
from .store import ResultsStore, read_table
from .tpe import TPESearch

STRATEGIES = {"random": RandomSearch, "evolution": RegularizedEvolution, "tpe": TPESearch, "nsga2": NSGA2Search}

__all__ = [
    "STRATEGIES",
    "Candidate",
    "Controller",
    "NSGA2Search",
    "Objective",
    "Outcome",
    "RandomSearch",
    "RegularizedEvolution",
    "ResultsStore",
    "Search",
    "SearchConfig",
    "TPESearch",
    "evaluate_in_process",
    "load_search_config",
    "pareto_front",
    "read_table",
]
