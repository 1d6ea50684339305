"""The operator web page (``GET /ui`` on the admin port): its routes, and the page in headless Chromium."""
