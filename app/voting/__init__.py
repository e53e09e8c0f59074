"""The tech-stack vote: durable store, API routes and the page."""
