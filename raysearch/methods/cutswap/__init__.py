"""cutswap: multilevel saliency-guided patch swapping (SIViP 2024); see ``method.py``."""
