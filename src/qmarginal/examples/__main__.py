from . import _write_all

_write_all()
