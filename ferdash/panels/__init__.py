"""One Shiny module per dashboard panel."""
