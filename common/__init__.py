"""What every room uses: atomic files and safe loading (files.py), checks of values read from files
(checks.py), worker processes (processes.py), seeds and RNG states (seeds.py), videos, the live view
and joint plots (media.py)."""
