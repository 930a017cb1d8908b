"""Prometheus-style scraping: configuration, service discovery, relabelling, scrape loops."""
