"""Developer tools: static checks on the aimmat source tree."""
