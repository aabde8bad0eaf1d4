"""`python -m recoworld.cli`: the console script."""

from recoworld.cli import main

if __name__ == "__main__":
    main()
