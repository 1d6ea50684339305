"""Type checking of the SDK as its users see it: mypy on handler code against the installed package."""
