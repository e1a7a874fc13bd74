"""Training and evaluation data made here: synthetic pairs with exact flow (`synthetic`)."""
