"""How every entry script ends on bad input: one line that names the file, key or flag, never a
traceback (ACT_DEBUG=1 shows it). A fault of the hardware or of the code still ends with its traceback."""
import os
import sys

from common.files import DiskFull

DEBUG_VAR = 'ACT_DEBUG'  # set to 1: bad input ends with the traceback too
BAD_INPUT = (ValueError, KeyError, TypeError, IndexError, FileNotFoundError, FileExistsError, IsADirectoryError,
             NotADirectoryError, PermissionError)


def run_command(parser, main, args, usage=(), plain=()):
    """main(args) for an entry script. An exception of a `usage` type ends as parser.error (the usage
    line, exit 2), of a `plain` type as one line and exit 1 (as the script answered it before), a full
    disk as its one line and exit 1, and any other bad-input exception as one line and exit 2."""
    try:
        return main(args)
    except (DiskFull, *usage, *plain, *BAD_INPUT) as err:
        if os.environ.get(DEBUG_VAR):
            raise
        if isinstance(err, DiskFull):
            sys.exit(f'{parser.prog}: error: {err.strerror}')
        if isinstance(err, usage):
            parser.error(message(err))
        if isinstance(err, plain):
            sys.exit(f'{parser.prog}: error: {message(err)}')
        parser.exit(2, f'{parser.prog}: error: {message(err)} ({DEBUG_VAR}=1 shows where it was raised)\n')


def message(err):
    """The sentence of an exception: a KeyError's own text without the quotes repr adds."""
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    return text or type(err).__name__
