"""HTTP fetching for the ``web_fetch`` tool (host side: the sandboxes have no network)."""
