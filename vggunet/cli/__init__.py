"""The `vggunet` command line: a thin shell over the Python API, one module per subcommand.

Importing it loads neither Keras nor TensorFlow; a subcommand imports what it needs when it runs.
"""

from vggunet.cli.app import EXIT_USAGE, build_parser, main
from vggunet.cli.args import (
    decoder_filters_arg, fraction, non_negative_int, parse_palette, parse_size, parse_spec,
    positive_float, positive_int,
)
from vggunet.cli.data_args import add_data_args, make_datasets, resolve_pairs
from vggunet.cli.model_args import add_model_args, build_model_from_args
from vggunet.errors import CliError

__all__ = [
    "CliError", "EXIT_USAGE", "add_data_args", "add_model_args", "build_model_from_args",
    "build_parser", "decoder_filters_arg", "fraction", "main", "make_datasets",
    "non_negative_int", "parse_palette", "parse_size", "parse_spec", "positive_float",
    "positive_int", "resolve_pairs",
]
