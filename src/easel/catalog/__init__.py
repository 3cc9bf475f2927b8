from easel.catalog.loader import Catalog, Channel, Model, Plan, Product, load_catalog

__all__ = ["Catalog", "Channel", "Model", "Plan", "Product", "load_catalog"]
