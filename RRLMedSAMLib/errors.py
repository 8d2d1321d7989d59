"""User-facing errors: the command line turns these into one message and exit code 2."""


class InputError(Exception):
    """Bad input the user can fix (wrong file, wrong shape, wrong values, unwritable folder).

    The message must say what is wrong and what to do about it; it is printed as-is.
    """


class CancelledError(BaseException):
    """The run was interrupted (signal or user cancel); checkpoints already written stay valid.

    Like ``KeyboardInterrupt`` it is not an ``Exception``: libraries that wrap every
    ``Exception`` they meet (MONAI's transforms re-raise them as ``RuntimeError``) let it through.
    """
