"""Small training recipes on data that ships offline."""
