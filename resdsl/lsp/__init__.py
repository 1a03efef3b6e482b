"""`resdsl lsp`: a Language Server for resdsl specs (pygls), built on the front end."""
