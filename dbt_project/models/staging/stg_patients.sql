{{ config(unique_key='patient_key') }}
-- depends_on: {{ ref('internal_column_types') }}
{#- Columns and casts come from the internal_column_types seed (macros/seeds.sql). Incremental:
    this build's batches merged with the rows held for their keys (macros/increments.sql). #}
with source as (
    select * from {{ raw_rows('patients') }}
),

renamed as (
    select
        {{ stage_columns('patients') }},
        coalesce({{ raw_column('PatientID') }}, '') || '^' || coalesce({{ raw_column('IssuerOfPatientID') }}, '') as patient_key,
        source_key,
        batch_id,
        ingested_at
    from source
),

candidates as (
    {{ merge_with_existing('renamed', 'patient_key') }}
),

deduplicated as (
    select *
    from candidates
    where patient_key is not null
    qualify row_number() over (partition by patient_key order by source_key, ingested_at desc) = 1
)

select * from deduplicated
