"""`python -m app`: run the LB with settings from the environment (LB_* variables); see app.launch."""

from __future__ import annotations

from app.launch import main

if __name__ == "__main__":
    main()
