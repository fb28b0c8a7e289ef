DROP TABLE conversations;
DROP DOMAIN did;
