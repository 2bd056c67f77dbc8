"""The safeguards around every provider call; the seed's functions are the public API."""
