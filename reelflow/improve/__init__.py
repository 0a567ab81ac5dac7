"""The improve pipeline: performance, aggregates, charts, insights and improvements."""
