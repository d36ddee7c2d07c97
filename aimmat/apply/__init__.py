"""Apply: the only code that writes the campaign folder."""
