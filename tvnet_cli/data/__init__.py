"""Files turned into tensors for training and evaluation: ground-truth flow pairs and their
augmentation (`pairs`), TSN clips of action videos (`clips`), synthetic pairs with exact flow
(`synthetic`). Finding and reading the files is `io/`."""
