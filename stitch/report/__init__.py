"""Compare-homography reports: ``compare`` builds the report model (rows, JSON), ``html`` renders its page."""
