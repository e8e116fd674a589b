"""The WebService Get feed of the coordinator: every store's issued documents."""
