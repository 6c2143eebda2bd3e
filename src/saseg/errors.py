"""The project's exceptions. Messages say what was expected, what was got, and where."""


class SasegError(Exception):
    """Base class: the CLI prints these as one line, without a traceback."""


class DataError(SasegError):
    """Input data (an image, a label, a folder, a spec string) cannot be used."""


class NotFittedError(SasegError):
    """An estimator was used before `fit`."""

    def __init__(self, name: str = "estimator"):
        super().__init__(f"This {name} is not fitted yet: call fit() before score().")


class DegenerateDataError(SasegError):
    """Too few, constant or non-finite activation traces to fit or score."""


class UnknownClassError(DataError):
    """A class id that the SA model (or the class metadata) does not know."""


class ModelError(SasegError):
    """A model, checkpoint or traced layer cannot be used."""


class FormatError(SasegError):
    """A saved artefact is missing, corrupt or of an unsupported version."""


class BusyError(SasegError):
    """An output folder is being written by another process (see `saseg.io.output_lock`)."""
