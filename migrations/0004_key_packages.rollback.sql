DROP TABLE key_packages;
