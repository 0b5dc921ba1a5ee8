"""What every room uses: atomic files and safe loading (files.py), worker processes (processes.py),
seeds and RNG states (seeds.py), videos, the live view and joint plots (media.py)."""
