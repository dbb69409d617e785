"""The demo package: a console script calling a C extension that needs libdemo."""
from demo._demo import greeting


def main():
    print(greeting())
    return 0
