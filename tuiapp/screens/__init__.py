"""One screen per area of the loop, plus the modal screens they share."""
