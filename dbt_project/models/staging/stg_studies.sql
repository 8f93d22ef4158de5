{{ config(unique_key='study_instance_uid') }}
-- depends_on: {{ ref('internal_column_types') }}
{#- Columns and casts come from the internal_column_types seed (macros/seeds.sql). Incremental:
    this build's batches merged with the rows held for their keys (macros/increments.sql). #}
with source as (
    select * from {{ raw_rows('studies') }}
),

renamed as (
    select
        {{ stage_columns('studies') }},
        coalesce({{ raw_column('PatientID') }}, '') || '^' || coalesce({{ raw_column('IssuerOfPatientID') }}, '') as patient_key,
        source_key,
        batch_id,
        ingested_at
    from source
),

candidates as (
    {{ merge_with_existing('renamed', 'study_instance_uid') }}
),

deduplicated as (
    select *
    from candidates
    where study_instance_uid is not null
    qualify row_number() over (partition by study_instance_uid order by source_key, ingested_at desc) = 1
)

select * from deduplicated
