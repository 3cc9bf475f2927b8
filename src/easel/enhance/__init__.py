"""Prompt enhancement for `llm_enhance` orders: an enhancer backend, its cache, its time limit."""
