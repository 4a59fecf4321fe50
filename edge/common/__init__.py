"""The shared base: the small modules both sides import (run-folder contract, files, command lines, errors, formatting)."""
