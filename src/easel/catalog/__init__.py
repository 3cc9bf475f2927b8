from easel.catalog.loader import Catalog, Model, Plan, Product, load_catalog

__all__ = ["Catalog", "Model", "Plan", "Product", "load_catalog"]
