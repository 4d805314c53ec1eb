"""Paper studies: each sub-package registers the reproduction targets of one paper (its tables and
figures), with its option names, published numbers and logs."""
