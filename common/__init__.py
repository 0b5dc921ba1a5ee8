"""What every room uses: atomic files and safe loading (files.py), worker processes (processes.py),
seeds and RNG states (seeds.py), videos and the live view (media.py)."""
