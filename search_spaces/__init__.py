"""The genotype: architecture specs, published networks, search spaces and their operations."""

from .graph import from_graph, to_graph
from .mutations import KINDS as MUTATION_KINDS
from .mutations import Mutation, mutate, neighbours
from .published import FILTER_SIZE_MAP, deeplab, get_spec, published_names, spinenet
from .refs import resolve_spec
from .space import SearchSpace, SpaceOptions, sample
from .spec import STEM, ArchSpec, Block, Head, Scaling, SpecError, aspp_rates

__all__ = [
    "FILTER_SIZE_MAP",
    "MUTATION_KINDS",
    "STEM",
    "ArchSpec",
    "Block",
    "Head",
    "Mutation",
    "Scaling",
    "SearchSpace",
    "SpaceOptions",
    "SpecError",
    "aspp_rates",
    "deeplab",
    "from_graph",
    "get_spec",
    "mutate",
    "neighbours",
    "published_names",
    "resolve_spec",
    "sample",
    "spinenet",
    "to_graph",
]
