"""Every size limit of the front end, stated once (docs/language.md has the same table), and the bound on
decoding processes that `--workers` and the data loader share.

Each is checked as early as it can be, so that an oversized spec is refused in milliseconds and
whatever is accepted compiles in seconds with bounded memory.
"""

import os

MAX_SPEC_BYTES = 1_000_000  # one spec file
MAX_LITERAL_DIGITS = 18  # an integer or float literal, a shape's dimension, a --set value
MAX_EXPRESSION_DEPTH = 200  # parentheses, conditionals and unary minus nested in one expression
MAX_EXTENDS_DEPTH = 16  # files in an `extends` chain
MAX_CALL_DEPTH = 32  # blocks calling blocks
MAX_NESTING_DEPTH = 16  # `if` and `for` bodies in one another (an else-if chain too); times MAX_CALL_DEPTH, in stack
MAX_PATH_PARTS = 100  # dotted parts of a layer's module path (`layer1.0.se.fc1` has 4)
MAX_STAGES = 1_000  # stage lines of a network
MAX_BLOCKS = 100_000  # blocks in all stages
MAX_WEIGHTED_LAYERS = 100_000  # conv and linear layers
MAX_NODES = 250_000  # ops of any kind in the graph
MAX_INSTANCES = 250_000  # uses of blocks and shortcut options: a stage's blocks, blocks called in blocks, shortcuts
MAX_INSTANTIATED = 2_500_000  # syntax nodes of block and shortcut definitions instantiated, once per use
MAX_WIDTH = 65_536  # channels, features, or one side of the input
MAX_ACTIVATION_BYTES = 64 * 2**30  # fp32 activations of one image through the whole network
MAX_PARAM_BYTES = 64 * 2**30  # fp32 weights of the whole network


WORKERS_PER_CPU = 4  # the most decoding processes per CPU: more only thrash (and may exhaust memory)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def max_workers() -> int:
    """The most `--workers` this process may be given."""
    return WORKERS_PER_CPU * usable_cpus()


def human_bytes(value: int) -> str:
    """A byte count as people read it: `137.3 MiB`."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value} B"


def quoted(text: str, limit: int = 40) -> str:
    """`text` quoted for a message, cut short if long (a value of thousands of digits stays one readable line)."""
    return repr(shortened(text, limit))


def shortened(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else f"{text[:limit]}..."
