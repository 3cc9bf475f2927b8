"""Media intake and export: reference images in, animation clips out."""
