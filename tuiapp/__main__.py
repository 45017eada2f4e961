def main() -> None:  # replaced by the real CLI
    raise SystemExit(2)
