"""The shared base: the small modules both sides import (run folder, records, files, commands, errors, formatting)."""
