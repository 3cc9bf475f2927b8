"""The safety check: prompts against the catalog's list, outputs through an NSFW classifier."""
