"""Side effects of the pipelines, grouped by capability; one typed input and output each."""
