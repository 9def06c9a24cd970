"""Built-in datasets that need no download: captioned coloured shapes and a text corpus."""
