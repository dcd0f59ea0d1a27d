from .fakes import no_smtp_connect  # noqa: F401 - fixture for every verifier test
