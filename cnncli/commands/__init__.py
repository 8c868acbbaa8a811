"""The commands' library halves (`cnn project`, `top`, `demo`, `features`, `filters`): a library call
that does the work and writes the files; cli.py parses and renders around them."""
