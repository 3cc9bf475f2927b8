from easel.catalog.loader import Catalog, Channel, Lora, Model, Plan, Product, load_catalog

__all__ = ["Catalog", "Channel", "Lora", "Model", "Plan", "Product", "load_catalog"]
