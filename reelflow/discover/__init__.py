"""The discover pipeline: scrape watched accounts, find outliers, analyze and adapt them."""
