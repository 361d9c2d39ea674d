"""Run the firmware's unit tests: `micropython tests/run.py` from firmware/.

Also runs under CPython (`python3 tests/run.py`), with tests/cpython on the path for
the `micropython` module. Exits 1 if any test fails.
"""

import sys

sys.path.insert(0, ".")
sys.path.insert(0, "tests")
if sys.implementation.name != "micropython":
    sys.path.insert(0, "tests/cpython")

MODULES = ["test_modbus", "test_inputs", "test_config", "test_app"]


def main():
    only = sys.argv[1:]
    passed = failed = 0
    for name in MODULES:
        mod = __import__(name)
        for attr in sorted(dir(mod)):
            if not attr.startswith("test_") or (only and attr not in only):
                continue
            try:
                getattr(mod, attr)()
            except Exception as exc:  # noqa: BLE001 - report every failure, then exit 1
                failed += 1
                print("FAIL %s.%s: %s %s" % (name, attr, type(exc).__name__, exc))
                if hasattr(sys, "print_exception"):
                    sys.print_exception(exc)
                else:
                    import traceback
                    traceback.print_exc()
            else:
                passed += 1
    print("%s: %d passed, %d failed" % (sys.implementation.name, passed, failed))
    sys.exit(1 if failed or not passed else 0)


main()
