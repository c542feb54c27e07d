"""clflow: a FastFlow-style 2D normalizing flow strengthened by contrastive proxy tasks (CL-Flow, SPIE ISPP 2024)."""
